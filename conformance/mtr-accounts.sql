-- Run on the primary only (replicated): the accounts and the `test`
-- database a server started by mysql-test-run has. Tests connect as
-- root without a password over TCP (mysqltest's `connect (c,localhost,root,,)`
-- reaches the server as 'root'@'127.0.0.1'); a root@127.0.0.1 row keeps
-- working when a failed test leaves an anonymous ''@'127.0.0.1' behind.
ALTER USER 'root'@'%' IDENTIFIED BY '';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
DROP DATABASE IF EXISTS test;
CREATE DATABASE test DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci;
CREATE DATABASE IF NOT EXISTS mtr;
