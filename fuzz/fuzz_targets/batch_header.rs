//! Any bytes as a stored or produced record batch: parsing, CRC checks, validation and reading the
//! records never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use once_log::batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = once_log::BatchHeader::parse(data) {
        let _ = header.total_len();
        let _ = header.last_offset();
        if header.total_len() <= data.len() {
            let _ = once_log::verify_crc(&data[..header.total_len()]);
        }
        // Records are read whatever the CRC says (a decoder must not trust it to stay safe).
        let _ = batch::uncompressed_records(&header, data);
        let _ = batch::parse_control_record(data);
    }
    if let Ok(valid) = once_log::ValidBatch::validate(data.to_vec()) {
        let whole = valid.to_vec();
        let _ = batch::uncompressed_records(valid.header(), &whole);
    }
    let _ = batch::read_records(data, data.len() / batch::RECORD_LEN_MIN);
});
