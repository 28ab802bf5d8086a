-- sysbench script for benches/load.sh: connection churn, as PHP-FPM workers
-- cause it. One event = connect (with schema) [+ SELECT 1] + disconnect.
--   --query=1  connect + SELECT 1 + close (the default)
--   --query=0  connect + close: the accept + authentication rate alone
sysbench.cmdline.options = {
   query = {"Run SELECT 1 on each connection (1) or only connect and close (0)", 1}
}

function thread_init()
   drv = sysbench.sql.driver()
end

function event()
   local con = drv:connect()
   if sysbench.opt.query == 1 then
      con:query("SELECT 1")
   end
   con:disconnect()
end
