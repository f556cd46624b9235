// SseStream: one open Server-Sent Events response (text/event-stream). A handler gets it
// from Responder::StartStream and keeps it as long as it wants to push events.
//
// Thread-safety: every method may be called from any thread, concurrently.
// Lifetime: the holder may keep the stream after it closed; Send then returns false. The
// server keeps keep-alive comments flowing (": keepalive", every 15 s by default).
// Backpressure: events wait in a bounded per-stream queue; a client too slow to drain it
// is dropped (the stream closes) instead of letting memory grow.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace joule::net {

class SseStream {
 public:
  virtual ~SseStream() = default;

  // Queues one event ("event: <event>\ndata: <line>\n...\n\n"; multi-line data becomes
  // several data lines; an empty `event` omits the event line). Returns false, dropping
  // the event, once the stream is closed: client gone, queue overflow, Close(), or server
  // shutdown.
  virtual bool Send(std::string_view event, std::string_view data) = 0;
  // Ends the stream: queued events are still written, then the connection closes.
  virtual void Close() = 0;
  virtual bool IsOpen() const = 0;
  // Sets the callback run once when the stream closes for any reason, on an I/O thread.
  // If the stream is already closed it runs right away on the caller's thread. A later
  // call replaces the callback. It must not block.
  virtual void SetOnClose(std::function<void()> on_close) = 0;
};

// The wire form of one event, as Send writes it. CR and LF in `event` are dropped.
std::string EncodeSseEvent(std::string_view event, std::string_view data);

}  // namespace joule::net
