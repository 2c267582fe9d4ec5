// Re-embed the migrations (`sqlx::migrate!`) whenever a file under them changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
