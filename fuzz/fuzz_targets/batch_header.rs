//! Any bytes as a stored or produced record batch: parsing and CRC checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = once_log::BatchHeader::parse(data) {
        let _ = header.total_len();
        let _ = header.last_offset();
        if header.total_len() <= data.len() {
            let _ = once_log::verify_crc(&data[..header.total_len()]);
        }
    }
});
