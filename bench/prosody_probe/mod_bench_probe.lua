-- mod_bench_probe: server-side probes for bench/run.py (never part of minimix).
--
-- Timestamps (the join section): loaded on the VirtualHost (logs each resource bind) and
-- on the MUC component (counts the occupants each session has joined).  It appends lines
-- to the file named by the global option bench_probe_file:
--   <unix time> bind <full jid>
--   <unix time> join <full jid> <n>     for n = 1, every multiple of 100 and bench_probe_target
-- Times come from util.time.now() (gettimeofday), the same clock as Python's time.time().
--
-- Allocation (the relay section's diagnostic runs): on the VirtualHost, an IQ set to the
-- host, <gc xmlns='urn:minimix:bench:gc' op='stop|restart'/>, is answered with
-- <gc kb='…'/>, the Lua heap in KB, and then holds off (stop) or lets go (restart)
-- Prosody's collector: the heap's growth between the two is what Prosody allocated
-- meanwhile.  Nothing else is touched, so a server that never gets the IQ runs as stock.

local st = require "util.stanza";

if module:get_host_type() ~= "component" then
	module:hook("iq-set/host/urn:minimix:bench:gc:gc", function (event)
		local stanza = event.stanza;
		local op = stanza.tags[1].attr.op;
		local kb = collectgarbage("count");
		if op == "stop" then
			collectgarbage("stop");
		elseif op == "restart" then
			collectgarbage("restart");
		end
		event.origin.send(st.reply(stanza):tag("gc", { xmlns = "urn:minimix:bench:gc", kb = string.format("%.1f", kb) }));
		return true;
	end);
end

local now = require "util.time".now;
local path = module:get_option_string("bench_probe_file");
local target = module:get_option_number("bench_probe_target", 1000);
if not path then
	return; -- no timestamps asked for (the relay and catch-up sections)
end

local function out(line)
	local f = io.open(path, "a");
	if not f then return end
	f:write(string.format("%.6f %s\n", now(), line));
	f:close();
end

-- The MUC component has the muc module; a VirtualHost does not.
if module:get_host_type() == "component" then
	local joined = {};
	module:hook("muc-occupant-joined", function (event)
		local origin = event.origin;
		local who = (origin and origin.full_jid) or (event.stanza and event.stanza.attr.from) or "?";
		local n = (joined[who] or 0) + 1;
		joined[who] = n;
		if n == 1 or n % 100 == 0 or n == target then
			out(string.format("join %s %d", who, n));
		end
	end, -100);
else
	module:hook("resource-bind", function (event)
		out("bind " .. tostring(event.session.full_jid));
	end, -100);
end
