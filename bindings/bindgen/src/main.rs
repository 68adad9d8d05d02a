//! `uniffi-bindgen generate --library target/debug/libtern_bindings.so --language python ...`

fn main() {
    uniffi::uniffi_bindgen_main()
}
