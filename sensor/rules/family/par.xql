// id: coercion-rare-par-call
// title: Rare MS-PAR RpcAsyncOpenPrinter naming another print server
// severity: medium
// version: 3
// technique: T1187
// description: MS-PAR over ncacn_ip_tcp: a printer name on another host makes the spooler connect to it as its machine account. Over TCP there is no SMB session: the server's own name (agent_hostname) comes from its authenticated bind (the NTLM CHALLENGE's DNS computer name, or the Kerberos service host of a bind it accepted); a printer named by that DNS name, or by its first label alone (a dotless name, which cannot name another domain's host), is the server itself. Unauthenticated binds give no name: such clients naming the server by name are counted (medium, until learned out), unless the printer's host is in $print_servers (the configuration's [address_groups]): a declared print server is a listener the attacker does not control. Keyed like the seed query (actor, server, function, opnum, listener host, path); a listener that is the server itself or a local path is not coercion; a sealed call (no arguments) still counts, listener unknown.
dataset = xdr_data
| alter day = extract_time(_time, "DAY"),
 listener_path = json_extract_scalar(action_rpc_func_str_call_fields, "$.pPrinterName"),
 listener_host = arrayindex(regextract(lowercase(listener_path), "^(?:[\\/]*[?.][?]?[\\/]unc[\\/]|[a-z]+://|[\\/]*)([^\\/@:\[\]\s]+)(?:$|[\\/@]|:[0-9])"), 0),
 server_label = arrayindex(regextract(lowercase(agent_hostname), "^([a-z0-9-]*[a-z][a-z0-9-]*)[.]"), 0)
| filter event_type = 22 and action_rpc_interface_uuid in ("{76F03F96-CDFD-44FC-A22C-64950A001209}") and action_rpc_func_opnum in (0)
 and (listener_path = null or (listener_host != null and listener_host != lowercase(agent_hostname) and listener_host != agent_ip
  and (server_label = null or listener_host != server_label)))
 and not (listener_host != null and listener_host in $print_servers)
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_name, actor_type, day, listener_host, listener_path
| comp count_distinct(day) as day_count by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, listener_host, listener_path
| filter day_count < 7
