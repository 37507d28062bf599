//! `libctl`: the command line of the library circulation toolkit. Parse, call libcore,
//! render; the exit code comes from the error itself.

mod app;
mod cmd;
mod render;

fn main() -> std::process::ExitCode {
    app::main()
}
