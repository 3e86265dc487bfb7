// The page's Live mode: an AudioWorklet processor that hands the microphone's samples to the page.
// Its first input's first channel (the page asks for mono; a browser that gives more channels has them mixed down
// by the node's channelCount of 1) is copied into blocks of `blockFrames` samples (Float32, the AudioContext's
// sampling rate), each posted to the page as a transferred ArrayBuffer: a message every ~43 ms at 48 kHz rather
// than one per 128-frame render quantum. The node outputs silence.
class LiveCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.blockFrames = (options.processorOptions && options.processorOptions.blockFrames) || 2048;
    this.block = new Float32Array(this.blockFrames);
    this.filled = 0;
    this.running = true;
    // "stop": send what is left, then "stopped" (a port keeps its order: the page sends "end" after it);
    // "drop": stop at once, the rest unsent.
    this.port.onmessage = (event) => {
      if (event.data === "stop") {
        this.flush();
        this.port.postMessage("stopped");
      }
      if (event.data === "stop" || event.data === "drop") {
        this.running = false;
        this.filled = 0;
      }
    };
  }

  flush() {
    if (this.filled === 0) return;
    const samples = this.block.slice(0, this.filled);
    this.port.postMessage(samples.buffer, [samples.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (this.running && channel) {  // no input connected yet (or any more): nothing to send
      let offset = 0;
      while (offset < channel.length) {
        const count = Math.min(channel.length - offset, this.blockFrames - this.filled);
        this.block.set(channel.subarray(offset, offset + count), this.filled);
        this.filled += count;
        offset += count;
        if (this.filled === this.blockFrames) this.flush();
      }
    }
    return this.running;
  }
}

registerProcessor("live-capture", LiveCapture);
