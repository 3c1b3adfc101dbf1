Пусконаладочные работы по заказу № {{ data.order }} назначены на {{ data.date | datetime }}. Объект: {{ data.site }}.
