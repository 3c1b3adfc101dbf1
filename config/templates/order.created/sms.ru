Заказ № {{ data.order }} на сумму {{ data.amount | money:data.currency }} принят. Спасибо за заказ!
