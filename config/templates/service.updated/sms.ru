Обращение № {{ data.ticket }}: {{ data.status }}.
