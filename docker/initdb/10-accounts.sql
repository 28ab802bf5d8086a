-- Accounts rwproxy and the replicas need on the primary (replicated to
-- the replicas, which start from the same GTID position).
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER IF NOT EXISTS 'rwproxy_monitor'@'%' IDENTIFIED BY 'monitor';
GRANT SUPER, REPLICATION CLIENT, REPLICATION SLAVE ADMIN, READ_ONLY ADMIN,
      BINLOG ADMIN, RELOAD, PROCESS, SLAVE MONITOR ON *.* TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.* TO 'rwproxy_monitor'@'%';
