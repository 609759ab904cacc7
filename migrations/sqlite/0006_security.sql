-- A renewed certificate supersedes the device's older ones once it is first used.
ALTER TABLE issued_certificates ADD COLUMN used_at_ms BIGINT;
CREATE INDEX issued_certificates_device ON issued_certificates (device_id);

-- Tokens name the person they belong to (approvals need another person, not another token
-- of the same one), and may be marked so that their changes wait for a human's approval
-- whatever surface they use.
ALTER TABLE api_tokens ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN requires_approval BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE approvals ADD COLUMN requested_by_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN surface TEXT NOT NULL DEFAULT 'mcp';
