-- Makes a network familiar to an account outside a login (FamiliarNetworks::remember: the
-- account was registered from it). KEYS[1]: the account's username key. ARGV[1]: now in ms, or
-- '' to read Redis TIME. ARGV[2]: the network's key text (familiar::network_of). ARGV[3]: the
-- key's dimension. Returns JSON {}.
remember_network(KEYS[1], ARGV[2], now_ms(ARGV[1]))
return '{}'
