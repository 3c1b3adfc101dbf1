Здравствуйте, {{ customer.name | default:"уважаемый клиент" }}! Ваш заказ № {{ data.order }} отправлен, перевозчик — {{ data.carrier }}. Отследить доставку можно по ссылке: {{ data.tracking_url }}
