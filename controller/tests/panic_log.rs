//! A panic is logged as one structured event whose text is escaped: a path or header copied
//! into a panic message cannot forge log lines. (Its own test binary: the panic hook and the
//! subscriber are process-wide.)

use ostium_test_support::log::LogBuffer;

#[test]
fn a_panic_is_logged_as_one_escaped_json_line() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || writer.clone()).init();
    ostium::install_panic_hook();

    let forged = "/admi\u{e9}\n{\"level\":\"INFO\",\"fields\":{\"message\":\"forged\"}}";
    let result = std::panic::catch_unwind(|| panic!("byte index 5 is not a char boundary of `{forged}`"));
    assert!(result.is_err());

    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["message"], "panic");
    let logged = event["panic"].as_str().unwrap();
    assert!(logged.contains("\\n{\\\"level\\\""), "the payload is Debug-escaped: {logged}");
    assert!(event["location"].as_str().unwrap().contains("panic_log.rs"));
}
