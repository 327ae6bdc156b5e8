"""maas runtime: ONNX Runtime + tokenizers + numpy behind one FastAPI app and AWS event handlers.

Never imports torch, transformers, onnx or aws_cdk: this folder is what a Lambda function ships.
"""
