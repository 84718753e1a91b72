"""halocut backends: emitters (ONNX, TVM, torch) and the deployment manifest."""
