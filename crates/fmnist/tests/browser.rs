//! The web page in a real browser: Debian's headless Chromium, driven through
//! `chromedriver`'s WebDriver protocol, uploads an image, picks a random test image,
//! draws on the pad, sends a file that is not an image, and reads each answer off the page.
//! Needs `apt-get install chromium chromium-driver` (`.ci/run` installs them).
//! With `FMNIST_SCREENSHOT=FILE.png` it also saves pictures of the page (wide, and
//! phone-sized as `FILE.phone.png`), showing `FMNIST_SCREENSHOT_MODEL` when given.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{SYSTEM_DATA, Sandbox, Server};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The WebDriver name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// One browser session through chromedriver.
struct Browser {
    driver: String,
    session: String,
    _chromedriver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).is_file(),
                "the browser test needs {tool}: apt-get install chromium chromium-driver"
            );
        }
        let port = free_port();
        let chromedriver = Process(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let driver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = agent()
                .get(format!("{driver}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-quic", "--no-first-run",
                    "--disable-component-update", "--disable-sync", "--window-size=1000,760",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let reply = request("POST", &format!("{driver}/session"), Some(caps));
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {reply}"))
            .to_string();
        Browser {
            driver,
            session,
            _chromedriver: chromedriver,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver, self.session);
        let reply = request(method, &url, body);
        assert!(
            reply["value"].get("error").is_none(),
            "WebDriver {method} {path}: {reply}"
        );
        reply["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn class(&self, css: &str) -> String {
        let id = self.element(css);
        let v = self.call("GET", &format!("/element/{id}/attribute/class"), None);
        v.as_str().unwrap_or_default().to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Chooses `file` in a file input, as a user picking it in the dialog.
    fn choose_file(&self, css: &str, file: &Path) {
        let id = self.element(css);
        let text = file.display().to_string();
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Draws a stroke through `points` (offsets from the element's centre) with the mouse.
    fn draw(&self, css: &str, points: &[(i64, i64)]) {
        let id = self.element(css);
        let at = |&(x, y): &(i64, i64)| json!({"type": "pointerMove", "duration": 20, "origin": {ELEMENT: id}, "x": x, "y": y});
        let mut steps = vec![at(&points[0]), json!({"type": "pointerDown", "button": 0})];
        steps.extend(points[1..].iter().map(at));
        steps.push(json!({"type": "pointerUp", "button": 0}));
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": steps,
        }]});
        self.call("POST", "/actions", Some(actions));
    }

    /// Waits until `css`'s text satisfies `done`; returns it.
    fn wait_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css);
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} still shows {text:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` (a function body) in the page; returns what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    fn screenshot(&self, file: &Path) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(file, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent()
            .delete(format!("{}/session/{}", self.driver, self.session))
            .call();
    }
}

fn request(method: &str, url: &str, body: Option<Value>) -> Value {
    let a = agent();
    let reply = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("DELETE", _) => a.delete(url).call(),
        (_, Some(b)) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        (_, None) => a.post(url).send_empty(),
    };
    let mut reply = reply.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = reply
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
}

#[test]
fn the_page_classifies_uploads_samples_and_drawings_in_chromium() {
    let sb = Sandbox::new();
    sb.quick_model(3000, 500);
    // For the README's picture, a better model than the test's quick one.
    if let Some(model) = std::env::var_os("FMNIST_SCREENSHOT_MODEL") {
        std::fs::copy(model, sb.path("m.safetensors")).unwrap();
    }
    let data = fmnist::data::load(&fmnist::DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    })
    .unwrap();
    let boot = sb.path("boot.png");
    image::GrayImage::from_raw(28, 28, data.test.image(0).to_vec())
        .unwrap()
        .save(&boot)
        .unwrap();
    // What the page should say for a file, from `predict --json` on it.
    let answer_for = |file: &str| {
        let cli: Value =
            serde_json::from_str(&sb.ok(&["predict", "m.safetensors", file, "--json"])).unwrap();
        let (class, pct) = (
            cli["class"].as_str().unwrap().to_string(),
            100.0 * cli["probability"].as_f64().unwrap(),
        );
        let answer = if cli["unsure"].as_bool().unwrap() {
            format!("Unsure: maybe none of the 10 classes (best guess {class}, {pct:.1} %)")
        } else {
            format!("{class} ({pct:.1} %)")
        };
        if cli["pair"].as_bool().unwrap() {
            answer + " — one of a pair: footwear only"
        } else {
            answer
        }
    };
    let expected = answer_for("boot.png");
    // A phone-like photo: a test garment as dark cloth on an unevenly lit tiled floor,
    // enlarged to 240×240 and saved as JPEG, so the page's answer comes through the
    // segmentation path.
    let garment = data.test.image(1);
    let photo = image::RgbImage::from_fn(240, 240, |x, y| {
        let v = garment[(y / 10 * 28 + x / 10) as usize];
        if v > 40 {
            let dark = 255.0 - v as f32;
            image::Rgb([(dark * 0.3) as u8, (dark * 0.35) as u8, (dark * 0.6) as u8])
        } else {
            let shade = 0.7 + 0.3 * x as f32 / 240.0;
            let tile = if ((x + 5) / 40 + (y + 5) / 40) % 2 == 0 {
                200.0
            } else {
                170.0
            };
            let grout = (x + 5) % 40 < 3 || (y + 5) % 40 < 3;
            let c = if grout { 90.0 } else { tile } * shade;
            image::Rgb([c as u8, (c * 0.93) as u8, (c * 0.82) as u8])
        }
    });
    photo.save(sb.path("photo.jpg")).unwrap();
    let photo_expected = answer_for("photo.jpg");
    // Any answer the page gives: a class, or unsure with a best guess.
    let reads_as_answer = |t: &str| {
        fmnist::data::CLASS_NAMES.iter().any(|c| {
            t.starts_with(c)
                || t.starts_with(&format!(
                    "Unsure: maybe none of the 10 classes (best guess {c},"
                ))
        })
    };
    let server = Server::start(&sb, &[]);
    let url = format!("{}/", server.base);
    let browser = Browser::start();
    browser.open(&url);
    let parameters = fmnist::Classifier::load(&sb.path("m.safetensors"))
        .unwrap()
        .net
        .num_params();
    let parameters = format!("{parameters} parameters");
    browser.wait_text("#model", |t| t.replace(',', "").contains(&parameters));

    // Before any image: an empty state that says what to do, not a broken image, a
    // blank black square and a dash.
    let empty = browser.text("#result-class");
    assert!(empty.starts_with("No image yet"), "{empty}");
    let shown = |css: &str| {
        browser.eval(&format!(
            "const e = document.querySelector('{css}'); return e.getClientRects().length > 0;"
        ))
    };
    assert_eq!(shown("#preview"), false, "the empty preview is shown");
    assert_eq!(shown("#input"), false, "the empty input canvas is shown");
    assert_eq!(browser.text("#preview-empty"), "no image yet");
    assert_eq!(shown("#preview-empty"), true);

    // An uploaded file: the page shows what `predict` says, and five bars.
    browser.choose_file("#file", &boot);
    assert_eq!(
        browser.wait_text("#result-class", |t| !t.starts_with("No image yet")),
        expected
    );
    assert_eq!(shown("#preview"), true);
    assert_eq!(shown("#input"), true);
    assert_eq!(shown("#preview-empty"), false);
    let bars = browser.text("#bars");
    assert_eq!(
        bars.lines().filter(|l| l.ends_with('%')).count(),
        5,
        "{bars}"
    );

    // A random test image, with its true class in the status line.
    browser.click("#random");
    let status = browser.wait_text("#status", |t| t.starts_with("true class: "));
    let truth = status.trim_start_matches("true class: ");
    assert!(fmnist::data::CLASS_NAMES.contains(&truth), "{status}");
    let answer = browser.text("#result-class");
    assert!(reads_as_answer(&answer), "{answer}");

    // A drawing on the pad.
    browser.click("#clear");
    browser.draw(
        "#pad",
        &[
            (-30, -100),
            (-30, 100),
            (0, 100),
            (0, -100),
            (30, -100),
            (30, 100),
        ],
    );
    browser.click("#classify-drawing");
    browser.wait_text("#status", |t| t.is_empty());
    let drawn = browser.text("#result-class");
    assert!(reads_as_answer(&drawn), "{drawn}");

    // A photo: the page's answer is `predict`'s, through the same segmentation.
    browser.choose_file("#file", &sb.path("photo.jpg"));
    browser.wait_text("#result-class", |t| t == photo_expected);

    // A file that is not an image: an error on the page, no stale answer.
    let notes = sb.path("notes.txt");
    std::fs::write(&notes, "not a picture").unwrap();
    browser.choose_file("#file", &notes);
    let error = browser.wait_text("#status", |t| t.contains("send an image"));
    assert!(error.contains("text/plain"), "{error}");
    assert_eq!(browser.class("#status"), "error");
    assert_eq!(browser.text("#result-class"), "—");

    browser.choose_file("#file", &boot);
    browser.wait_text("#result-class", |t| t == expected);
    let screenshot = std::env::var_os("FMNIST_SCREENSHOT").map(std::path::PathBuf::from);
    if let Some(file) = &screenshot {
        browser.eval("window.scrollTo(0, 0);");
        browser.screenshot(file);
    }

    // On a phone-sized screen the answer goes below the image, not beside it.
    browser.resize(390, 844);
    let stacked = browser.eval(
        "const a = document.querySelector('section[aria-labelledby=give]').getBoundingClientRect();
         const b = document.querySelector('section[aria-labelledby=answer]').getBoundingClientRect();
         return b.top >= a.bottom && b.right <= window.innerWidth && a.right <= window.innerWidth;",
    );
    assert_eq!(
        stacked, true,
        "the sections do not stack on a narrow screen"
    );
    if let Some(file) = &screenshot {
        browser.eval("document.getElementById('answer').scrollIntoView();");
        browser.screenshot(&file.with_extension("phone.png"));
    }
}
