// id: dfscoerce-rare-dfsnm-root-call
// title: Rare MS-DFSNM root call (DFSCoerce): NetrDfsAddStdRoot or NetrDfsRemoveStdRoot
// severity: high
// version: 1
// technique: T1187
// description: The published query without its name filter, so NetrDfsAddStdRoot (opnum 12) counts too; the sensor's default.
dataset  = xdr_data 
| alter day = extract_time(_time, "DAY"), dfs_relay_server = json_extract_scalar(action_rpc_func_str_call_fields,"$.ServerName"), 
 dfs_root_share = json_extract_scalar(action_rpc_func_str_call_fields,"$.RootShare")
| filter event_type = 22 and action_rpc_interface_uuid = "{4FC742E0-4A10-11CF-8273-00AA004AE673}" and action_rpc_func_opnum in (12, 13)
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_str_call_fields, action_rpc_func_name, actor_type, day, dfs_relay_server, dfs_root_share
| comp count_distinct(day) as day_count_dfrpc_src_dst_func by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, dfs_relay_server, dfs_root_share
| filter day_count_dfrpc_src_dst_func < 7
