-- A pin whose blocks came (in part) from a peer this node trusts, which may have sent them only
-- because it trusts this node back: what such a pin holds goes only to trusted peers and the
-- operator, never to strangers (a node passes on no more than its source would have given).
ALTER TABLE pins ADD COLUMN trusted_only INTEGER NOT NULL DEFAULT 0;
