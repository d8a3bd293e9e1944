// The Express side of gatehouse's framework-differential path test
// (../pathdiff_test.go): the routes of the README's Express migration, with
// Express's default routing (case-insensitive, trailing slash ignored). Every
// handler names itself in the body, so the test sees which one a path reached.
'use strict';
const express = require('express');

const app = express();
const answer = (handler) => (req, res) => res.json({ handler, url: req.originalUrl });

// The seed's admin section: requireRole('admin') before migration.
app.get('/admin/users', answer('admin'));
app.use('/admin', answer('admin'));
// The seed's POST /orders: requirePermission('order:create') before migration.
app.post('/orders', answer('order-create'));
app.get('/orders', answer('orders-list'));
app.get('/orders/:id', answer('orders-list'));
app.get('/', answer('public'));
app.get('/health', answer('public'));
app.use(answer('none'));

const server = app.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  // The test reads this line to learn the port.
  console.log(JSON.stringify({ listening: server.address().port }));
});
