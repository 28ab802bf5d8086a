-- Settings mysql-test-run gives the servers it starts itself
-- (mysql-test/include/default_mysqld.cnf) that can be set at runtime, so
-- that the main suite's .result files match a sandbox server started by
-- `rwproxy sandbox up`. Applied to every server of the sandbox (the same
-- values everywhere: a read that lands on a replica must see the same
-- defaults), before the `test` database is re-created with latin1.
SET GLOBAL log_bin_trust_function_creators = 1;
SET GLOBAL character_set_server = latin1;
SET GLOBAL collation_server = latin1_swedish_ci;
SET GLOBAL default_storage_engine = MyISAM;
SET GLOBAL key_buffer_size = 1048576;
SET GLOBAL sort_buffer_size = 262144;
SET GLOBAL max_heap_table_size = 1048576;
SET GLOBAL use_stat_tables = PREFERABLY;
SET GLOBAL histogram_type = JSON_HB;
SET GLOBAL binlog_direct_non_transactional_updates = ON;
SET GLOBAL connect_timeout = 60;
