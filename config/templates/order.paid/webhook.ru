Заказ № {{ data.order }} оплачен. Сумма: {{ data.amount | money:data.currency }}.
