// id: coercion-rare-rprn-call
// title: Rare MS-RPRN change-notification registration naming a listener (PrinterBug)
// severity: high
// version: 2
// technique: T1187
// description: RpcRemoteFindFirstPrinterChangeNotification(Ex): the spooler connects back to pszLocalMachine. A print client registering its own notifications makes the same call naming itself, as PrinterBug naming the attacker's own host does: a registration naming the caller itself (its address, or the first label of the name its NTLM logon gave) to a server in $print_servers (the configuration's [address_groups]) is not counted; to any other server (a DC, which should not run the spooler) it counts, rare the first days; a third-host listener always counts. Keyed like the seed query (actor, server, function, opnum, listener host, path); a listener that is the server itself or a local path is not coercion; a sealed call (no arguments) still counts, listener unknown.
dataset = xdr_data
| alter day = extract_time(_time, "DAY"),
 listener_path = json_extract_scalar(action_rpc_func_str_call_fields, "$.pszLocalMachine"),
 listener_host = arrayindex(regextract(lowercase(listener_path), "^(?:[\\/]*[?.][?]?[\\/]unc[\\/]|[a-z]+://|[\\/]*)([^\\/@:\[\]\s]+)(?:$|[\\/@]|:[0-9])"), 0),
 listener_label = coalesce(arrayindex(regextract(listener_host, "^([a-z0-9-]*[a-z][a-z0-9-]*)(?:[.]|$)"), 0), ""),
 caller_name = lowercase(coalesce(net_smb_workstation, ""))
| filter event_type = 22 and action_rpc_interface_uuid in ("{12345678-1234-ABCD-EF00-0123456789AB}") and action_rpc_func_opnum in (62, 65)
 and (listener_path = null or (listener_host != null and listener_host != lowercase(agent_hostname) and listener_host != agent_ip))
 and not (listener_host != null and (listener_host = actor_remote_ip or (caller_name != "" and listener_label = caller_name))
  and (agent_ip in $print_servers or agent_hostname in $print_servers))
| fields actor_remote_ip, agent_hostname, agent_id, action_rpc_func_opnum, action_rpc_func_name, actor_type, day, listener_host, listener_path
| comp count_distinct(day) as day_count by actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id, actor_remote_ip, listener_host, listener_path
| filter day_count < 7
