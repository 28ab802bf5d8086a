#!/bin/bash
# Runs once, on a replica's first start: replicate from the primary with
# GTID (slave_pos). The image's own MARIADB_MASTER_HOST support needs
# 11.x; this keeps 10.11 working.
set -euo pipefail
mariadb -uroot -p"${MARIADB_ROOT_PASSWORD}" <<SQL
SET GLOBAL gtid_slave_pos = '';
CHANGE MASTER TO MASTER_HOST='${MARIADB_MASTER_HOST}', MASTER_PORT=3306,
  MASTER_USER='${MARIADB_REPLICATION_USER}', MASTER_PASSWORD='${MARIADB_REPLICATION_PASSWORD}',
  MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
START SLAVE;
SQL
