//! A simulated line-protocol controller: real TCP on loopback, one node
//! table, what the tests and the demo run the driver against.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Power on.
    pub on: bool,
    /// The boot override as `PXE ONCE UEFI`.
    pub boot: String,
}

/// A running simulated controller; stops when dropped.
#[derive(Debug)]
pub struct SimBmc {
    addr: SocketAddr,
    nodes: Arc<Mutex<BTreeMap<String, Node>>>,
    /// Every request line after AUTH, for tests to assert on.
    log: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimBmc {
    /// Listens on 127.0.0.1 (a free port) with `password` and the given
    /// nodes, all off.
    pub async fn start(password: &str, nodes: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let nodes = Arc::new(Mutex::new(
            nodes
                .iter()
                .map(|n| {
                    (
                        (*n).to_owned(),
                        Node {
                            on: false,
                            boot: "DISK PERSISTENT LEGACY".into(),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        ));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (n2, l2, pw) = (nodes.clone(), log.clone(), password.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, pw.clone(), n2.clone(), l2.clone()));
            }
        });
        Ok(Self {
            addr,
            nodes,
            log,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A node's state.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes.lock().ok()?.get(name).cloned()
    }

    /// The request lines served so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn serve(
    stream: TcpStream,
    password: String,
    nodes: Arc<Mutex<BTreeMap<String, Node>>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut authed = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = if !authed {
            if words.first() == Some(&"AUTH") && words.get(1).copied() == Some(password.as_str()) {
                authed = true;
                "OK".to_owned()
            } else {
                "ERR auth".to_owned()
            }
        } else {
            if let Ok(mut l) = log.lock() {
                l.push(line.clone());
            }
            let Ok(mut nodes) = nodes.lock() else { return };
            match (
                words.first().copied(),
                words.get(1).and_then(|n| nodes.get_mut(*n)),
            ) {
                (Some(_), None) => "ERR unknown-node".to_owned(),
                (Some("STATUS"), Some(n)) => if n.on { "ON" } else { "OFF" }.to_owned(),
                (Some("ON" | "RESET"), Some(n)) => {
                    n.on = true;
                    "OK".to_owned()
                }
                (Some("OFF" | "SOFTOFF"), Some(n)) => {
                    n.on = false;
                    "OK".to_owned()
                }
                (Some("BOOT"), Some(n)) if words.len() == 5 => {
                    n.boot = words[2..].join(" ");
                    "OK".to_owned()
                }
                (Some("BOOT?"), Some(n)) => n.boot.clone(),
                _ => "ERR bad-request".to_owned(),
            }
        };
        if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}
