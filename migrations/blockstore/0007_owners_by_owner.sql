-- Forgetting a blob drops the rows that name it as another owner of a block: by owner, not by a
-- scan of every block's owners (one scan per blob made a GC quadratic in what it removed).
CREATE INDEX block_owners_by_owner ON block_owners(owner_kind, owner);
