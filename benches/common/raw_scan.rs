//! The baseline every XML decoder is measured against: a raw quick-xml
//! event scan that touches every event's bytes and builds no model.

use quick_xml::events::Event;
use quick_xml::Reader;
use std::hint::black_box;

/// Reads every event and touches its bytes; no model building.
pub fn raw_scan(input: &[u8]) -> usize {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = false;
    let mut n = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => n += e.local_name().as_ref().len(),
            Ok(Event::Text(t)) => n += black_box(&*t).len(),
            Ok(Event::CData(t)) => n += black_box(&*t).len(),
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => n += 1,
        }
    }
    n
}
