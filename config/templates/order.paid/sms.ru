Оплата {{ data.amount | money:data.currency }} по заказу № {{ data.order }} получена. Спасибо!
