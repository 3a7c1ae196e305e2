// Chat client: one WebSocket per page, reconnecting with capped exponential
// backoff (plus jitter) whenever the connection drops. A reconnect asks for what the
// page missed meanwhile (?after=<the last message id it shows>); a message that comes
// twice (posted during the reconnect itself) is shown once.
(function () {
  "use strict";
  var room = document.currentScript.dataset.room;
  var log = document.getElementById("log");
  var state = document.getElementById("state");
  var socketServer = document.getElementById("socket-server");
  var form = document.getElementById("send-form");
  var input = document.getElementById("message");
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  // The socket's host: the page's own, unless the server names another (ROUTING=domain).
  var socketHost = document.currentScript.dataset.socketHost;
  var host = socketHost ? socketHost + (location.port ? ":" + location.port : "") : location.host;
  var url = scheme + host + "/ws/chat/" + encodeURIComponent(room) + "/";
  var socket = null;
  var attempt = 0;
  // Ids of the messages shown (the history the page came with, then every live one), and
  // the newest message of the room when the page was made (0: none).
  var shown = new Set();
  var lastId = Number(document.currentScript.dataset.lastId || 0);
  Array.prototype.forEach.call(log.querySelectorAll("li[data-id]"), function (item) {
    see(Number(item.dataset.id));
  });

  function see(id) {
    shown.add(id);
    lastId = Math.max(lastId, id);
  }

  function setState(name) {
    state.textContent = name;
    state.className = "state " + name;
  }

  function append(text, kind) {
    var item = document.createElement("li");
    item.className = kind;
    var time = document.createElement("time");
    time.textContent = new Date().toTimeString().slice(0, 8);
    item.appendChild(time);
    item.appendChild(document.createTextNode(" " + text));
    log.appendChild(item);
    item.scrollIntoView({ block: "end" });
  }

  function connect() {
    setState("connecting");
    // Always: messages posted after the page's history was read, or while it was away.
    socket = new WebSocket(url + "?after=" + lastId);
    socket.onopen = function () {
      attempt = 0;
      // How many times this page has (re)connected: visible to tests and curious users.
      document.body.dataset.connections = String(Number(document.body.dataset.connections || 0) + 1);
      setState("connected");
    };
    socket.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (data.type === "hello") {
        // The interface server holding the socket (Daphne); in relay mode a worker answered.
        socketServer.textContent = data.interface || data.server;
      } else if (data.type === "message") {
        if (!shown.has(data.id)) {
          see(data.id);
          append(data.message, "message");
        }
      } else if (data.type === "recovered" && !data.complete) {
        append("some older messages of the time away are not shown", "error");
      } else if (data.type === "error") {
        append("error: " + data.error, "error");
      }
    };
    socket.onclose = function () {
      var delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt += 1;
      setState("reconnecting");
      setTimeout(connect, delay);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!input.value.trim() || !socket || socket.readyState !== WebSocket.OPEN) {
      return;
    }
    socket.send(JSON.stringify({ message: input.value }));
    input.value = "";
  });

  connect();
})();
