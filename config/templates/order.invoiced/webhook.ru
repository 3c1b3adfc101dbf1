Выставлен счёт по заказу № {{ data.order }} на сумму {{ data.amount | money:data.currency }}, срок оплаты {{ data.due_date | date }}.
