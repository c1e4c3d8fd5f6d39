// id: dfscoerce-rare-dfsnm-other-call
// title: Rare MS-DFSNM coercion call beyond the root calls (14, 15, 20, 23, 24)
// severity: high
// version: 1
// technique: T1187
// description: NetrDfsManagerInitialize, NetrDfsAddStdRootForced, NetrDfsRemove2, NetrDfsAddRootTarget, NetrDfsRemoveRootTarget: the DFSCoerce variants the seed query does not count. Keyed like the seed query (actor, server, function, opnum, listener host, path); a listener that is the server itself or a local path is not coercion; a sealed call (no arguments) still counts, listener unknown.
dataset = xdr_data
| alter day = extract_time(_time, "DAY"),
 listener_path = coalesce(json_extract_scalar(action_rpc_func_str_call_fields, "$.ServerName"), json_extract_scalar(action_rpc_func_str_call_fields, "$.pDfsPath")),
 listener_host = arrayindex(regextract(lowercase(listener_path), "^(?:[\\/]*[?.][?]?[\\/]unc[\\/]|[a-z]+://|[\\/]*)([^\\/@:\[\]\s]+)(?:$|[\\/@]|:[0-9])"), 0)
| filter event_type = 22 and action_rpc_interface_uuid in ("{4FC742E0-4A10-11CF-8273-00AA004AE673}") and action_rpc_func_opnum in (14, 15, 20, 23, 24)
 and (listener_path = null or (listener_host != null and listener_host != lowercase(agent_hostname) and listener_host != agent_ip))
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_name, actor_type, day, listener_host, listener_path
| comp count_distinct(day) as day_count by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, listener_host, listener_path
| filter day_count < 7
