Заказ № {{ data.order }} отправлен ({{ data.carrier }}). Отследить: {{ data.tracking_url }}
