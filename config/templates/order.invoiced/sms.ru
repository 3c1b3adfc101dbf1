Счёт по заказу № {{ data.order }}: {{ data.amount | money:data.currency }}. Просим оплатить до {{ data.due_date | date }}.
