-- Agentless devices pin their SSH host key at registration.
ALTER TABLE devices ADD COLUMN ssh_host_key TEXT;
