// AudioWorklet processor for the fairstream page: takes the microphone's first channel at the
// context's sample rate, resamples it to 16 kHz by linear interpolation (a no-op when the
// context already runs at 16 kHz) and posts Float32Array chunks of `chunkSamples` samples.
// The message "flush" posts what is buffered, then the string "flushed".
class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.chunkSamples = opts.chunkSamples || 1600;
    this.step = sampleRate / this.targetRate;  // input samples per output sample
    this.pos = 0;  // position of the next output sample, in input samples from `prev`
    this.prev = 0;  // last input sample of the previous block
    this.buffer = new Float32Array(this.chunkSamples);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        if (this.filled > 0) this.post(this.filled);
        this.port.postMessage("flushed");
      }
    };
  }

  post(n) {
    const out = this.buffer.slice(0, n);
    this.port.postMessage(out, [out.buffer]);
    this.filled = 0;
  }

  push(sample) {
    this.buffer[this.filled++] = sample;
    if (this.filled === this.chunkSamples) this.post(this.filled);
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    if (this.step === 1) {
      for (let i = 0; i < input.length; i++) this.push(input[i]);
      return true;
    }
    // Sample k of this block is input[k]; index -1 is `prev`, so interpolation is continuous
    // across blocks.
    while (this.pos < input.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : input[i];
      const b = input[i + 1];
      this.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.prev = input[input.length - 1];
    return true;
  }
}

registerProcessor("pcm16k", Pcm16kProcessor);
