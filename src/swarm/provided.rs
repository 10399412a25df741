//! The Kademlia store of this node: its own provider records only, about 100 bytes a key.
//!
//! libp2p's `MemoryStore` keeps room for 20 providers inline for every key (about 3 KiB), which
//! at the quarter of a million roots a node may provide came to most of its memory, and grew
//! with every image pushed (the soak's RSS). Strangers' records never reach this store (the
//! behaviour filters them: `StoreInserts::FilterBoth`), so that room was never used.

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;
use std::borrow::Cow;
use std::collections::HashSet;

pub struct OwnProviderRecords {
    local: PeerId,
    keys: HashSet<RecordKey>,
    max_keys: usize,
}

impl OwnProviderRecords {
    pub fn new(local: PeerId, max_keys: usize) -> Self {
        OwnProviderRecords { local, keys: HashSet::new(), max_keys }
    }

    /// Local records carry no addresses: the behaviour adds the node's current ones when it
    /// answers (as it does with `MemoryStore`).
    fn record(&self, key: &RecordKey) -> ProviderRecord {
        ProviderRecord::new(key.clone(), self.local, Vec::new())
    }
}

impl RecordStore for OwnProviderRecords {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = Box<dyn Iterator<Item = Cow<'a, ProviderRecord>> + 'a>;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    /// Values are never stored: this node puts none on the DHT, and strangers' are filtered.
    fn put(&mut self, _: Record) -> Result<()> {
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider != self.local {
            return Ok(());
        }
        if !self.keys.contains(&record.key) && self.keys.len() >= self.max_keys {
            return Err(Error::MaxProvidedKeys);
        }
        self.keys.insert(record.key);
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        if self.keys.contains(key) {
            vec![self.record(key)]
        } else {
            Vec::new()
        }
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        Box::new(self.keys.iter().map(|k| Cow::Owned(self.record(k))))
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if provider == &self.local {
            self.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_own_records_only_and_up_to_its_cap() {
        let (me, stranger) = (PeerId::random(), PeerId::random());
        let mut store = OwnProviderRecords::new(me, 2);
        let (a, b, c) = (RecordKey::new(&b"a"), RecordKey::new(&b"b"), RecordKey::new(&b"c"));
        store.add_provider(ProviderRecord::new(a.clone(), stranger, Vec::new())).unwrap();
        assert!(store.providers(&a).is_empty(), "a stranger's record is not kept");
        store.add_provider(ProviderRecord::new(a.clone(), me, Vec::new())).unwrap();
        store.add_provider(ProviderRecord::new(a.clone(), me, Vec::new())).unwrap();
        store.add_provider(ProviderRecord::new(b.clone(), me, Vec::new())).unwrap();
        assert!(matches!(store.add_provider(ProviderRecord::new(c.clone(), me, Vec::new())), Err(Error::MaxProvidedKeys)));
        let providers = store.providers(&a);
        assert_eq!(providers.len(), 1);
        assert_eq!((providers[0].provider, providers[0].expires), (me, None));
        let mut provided: Vec<RecordKey> = store.provided().map(|r| r.key.clone()).collect();
        provided.sort_by(|x, y| x.as_ref().cmp(y.as_ref()));
        assert_eq!(provided, vec![a.clone(), b.clone()]);
        store.remove_provider(&a, &stranger);
        assert_eq!(store.providers(&a).len(), 1, "a stranger cannot withdraw this node's record");
        store.remove_provider(&a, &me);
        assert!(store.providers(&a).is_empty());
        store.add_provider(ProviderRecord::new(c.clone(), me, Vec::new())).unwrap();
        assert!(store.put(Record::new(c, b"value".to_vec())).is_err(), "values are never stored");
    }
}
