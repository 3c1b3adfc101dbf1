Заказ № {{ data.order }} принят. Сумма: {{ data.amount | money:data.currency }}.
