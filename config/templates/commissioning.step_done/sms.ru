Заказ № {{ data.order }}: выполнен этап «{{ data.step }}».
