-- Accounts rwproxy and the replicas need on the primary (replicated to
-- the replicas, which start from the same GTID position).
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
-- The monitor account with exactly the README's minimal MariaDB grants
-- ("Grants of the monitor account"), as the sandbox creates it.
CREATE USER IF NOT EXISTS 'rwproxy_monitor'@'%' IDENTIFIED BY 'monitor';
GRANT SLAVE MONITOR, READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, RELOAD,
      REPLICATION MASTER ADMIN ON *.* TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.global_priv TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.proc TO 'rwproxy_monitor'@'%';
GRANT CREATE, INSERT, UPDATE, DELETE, SELECT ON rwproxy.* TO 'rwproxy_monitor'@'%';
