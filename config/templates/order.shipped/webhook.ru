Заказ № {{ data.order }} отправлен. Перевозчик: {{ data.carrier }}. Отслеживание: {{ data.tracking_url }}
