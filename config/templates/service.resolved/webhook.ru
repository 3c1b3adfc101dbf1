Обращение № {{ data.ticket }} решено.
