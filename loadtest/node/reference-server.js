// The reference peer of `make bench-broadcast`: a minimal websocket-shootout server in
// Node on Debian's node-ws (the shootout's own Node entry is this design), measured in
// the same run and on the same core as the kit. Echo comes back; a broadcast is written
// to every socket, then the broadcastResult to its sender. Anything that is not JSON
// comes straight back, as on the kit's /ws/echo/ (`make bench-sockets` pings with it).
//
// Usage: node reference-server.js PORT   (NODE_PATH=/usr/share/nodejs)
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 3000);
const server = new WebSocketServer({ port, perMessageDeflate: false });
server.on("connection", (socket) => {
  socket.on("message", (data) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      socket.send(data.toString());
      return;
    }
    if (message.type === "echo") {
      socket.send(data.toString());
    } else if (message.type === "broadcast") {
      const frame = data.toString();
      for (const client of server.clients) client.send(frame);
      socket.send(JSON.stringify({ type: "broadcastResult", payload: message.payload }));
    }
  });
});
server.on("listening", () => console.log(`reference shootout server on :${port}`));
process.on("SIGTERM", () => process.exit(0));
