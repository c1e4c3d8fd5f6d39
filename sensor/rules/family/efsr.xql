// id: coercion-rare-efsr-call
// title: Rare MS-EFSR path call naming another host (PetitPotam)
// severity: critical
// version: 1
// technique: T1187
// description: MS-EFSR on lsarpc (c681d488) or efsrpc (df1941c5), any transport: a FileName/SrcFileName UNC path on another host makes the server open it as its machine account. Keyed like the seed query (actor, server, function, opnum, listener host, path); a listener that is the server itself or a local path is not coercion; a sealed call (no arguments) still counts, listener unknown.
dataset = xdr_data
| alter day = extract_time(_time, "DAY"),
 listener_path = coalesce(json_extract_scalar(action_rpc_func_str_call_fields, "$.FileName"), json_extract_scalar(action_rpc_func_str_call_fields, "$.SrcFileName")),
 listener_host = arrayindex(regextract(lowercase(listener_path), "^(?:[\\/]*[?.][?]?[\\/]unc[\\/]|[a-z]+://|[\\/]*)([^\\/@:\[\]\s]+)(?:$|[\\/@]|:[0-9])"), 0)
| filter event_type = 22 and action_rpc_interface_uuid in ("{C681D488-D850-11D0-8C52-00C04FD90F7E}", "{DF1941C5-FE89-4E79-BF10-463657ACF44D}") and action_rpc_func_opnum in (0, 4, 5, 6, 7, 8, 9, 12, 13, 15, 16, 18, 19, 21)
 and (listener_path = null or (listener_host != null and listener_host != lowercase(agent_hostname) and listener_host != agent_ip))
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_name, actor_type, day, listener_host, listener_path
| comp count_distinct(day) as day_count by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, listener_host, listener_path
| filter day_count < 7
