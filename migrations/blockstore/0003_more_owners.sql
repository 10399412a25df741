-- A block recorded for more than one thing (a leaf two blobs share, the oci-layout file every
-- image holds): the owners after the first, which `blocks` keeps. A block may leave the node when
-- any of its owners is public.
CREATE TABLE block_owners (
    multihash BLOB NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('blob', 'image', 'pin')),
    owner TEXT NOT NULL,
    PRIMARY KEY (multihash, owner_kind, owner)
) WITHOUT ROWID;
