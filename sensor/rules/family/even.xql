// id: coercion-rare-even-call
// title: Rare MS-EVEN ElfrOpenBELW naming a backup log on another host (CheeseOunce)
// severity: high
// version: 1
// technique: T1187
// description: ElfrOpenBELW with a UNC BackupFileName (\??\UNC\host\...). Reading or clearing a log is not matched. Keyed like the seed query (actor, server, function, opnum, listener host, path); a listener that is the server itself or a local path is not coercion; a sealed call (no arguments) still counts, listener unknown.
dataset = xdr_data
| alter day = extract_time(_time, "DAY"),
 listener_path = json_extract_scalar(action_rpc_func_str_call_fields, "$.BackupFileName"),
 listener_host = arrayindex(regextract(lowercase(listener_path), "^(?:[\\/]*[?.][?]?[\\/]unc[\\/]|[a-z]+://|[\\/]*)([^\\/@:\[\]\s]+)(?:$|[\\/@]|:[0-9])"), 0)
| filter event_type = 22 and action_rpc_interface_uuid in ("{82273FDC-E32A-18C3-3F78-827929DC23EA}") and action_rpc_func_opnum in (9)
 and (listener_path = null or (listener_host != null and listener_host != lowercase(agent_hostname) and listener_host != agent_ip))
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_name, actor_type, day, listener_host, listener_path
| comp count_distinct(day) as day_count by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, listener_host, listener_path
| filter day_count < 7
