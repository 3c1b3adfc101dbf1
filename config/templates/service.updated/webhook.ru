Обращение № {{ data.ticket }}: статус «{{ data.status }}».
