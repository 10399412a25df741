-- What a block was recorded for, as a kind and a value instead of a string told apart by its
-- shape: 'blob' (value: the digest; leaves too), 'image' (the untagged image root CID), 'pin'
-- (the root CID added through the RPC). NULL: nothing in particular.
ALTER TABLE blocks ADD COLUMN owner_kind TEXT CHECK (owner_kind IN ('blob', 'image', 'pin'));
UPDATE blocks SET owner_kind = 'blob', owner = blob WHERE blob IS NOT NULL;
UPDATE blocks SET owner_kind = 'pin', owner = substr(owner, 5) WHERE owner_kind IS NULL AND owner LIKE 'pin %';
UPDATE blocks SET owner_kind = 'blob' WHERE owner_kind IS NULL AND owner LIKE '%:%';
UPDATE blocks SET owner_kind = 'image' WHERE owner_kind IS NULL AND owner IS NOT NULL;
