//! IPNS records, as `routing/put` takes them from anyone who can reach the RPC and as the gateway
//! serves them: protobuf, CBOR data, signatures by any key type. The input is a name (its length
//! in the first byte) and then the record.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else { return };
    let Some((name, record_bytes)) = rest.split_at_checked(len as usize) else { return };
    let Ok(name) = std::str::from_utf8(name) else { return };
    let Ok((name, _)) = af_registry::ipns::Name::parse(name) else { return };
    // Before the seeds' records expire, so that valid ones reach the end of the checks.
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
    if let Ok(record) = af_registry::ipns::validate(&name, record_bytes, now) {
        // Validation is a pure function of the bytes: checked again on every read, it must agree.
        assert_eq!(af_registry::ipns::validate(&name, record_bytes, now).ok(), Some(record));
    }
});
