Здравствуйте, {{ customer.name | default:"уважаемый клиент" }}! Мы приняли Ваш заказ № {{ data.order }} на сумму {{ data.amount | money:data.currency }}. Счёт пришлём, как только он будет готов.
