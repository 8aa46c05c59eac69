from setuptools import find_packages, setup

ONNX = ["onnx>=1.16", "tf2onnx>=1.16", "onnxruntime>=1.17"]

setup(
    name="kperceptual",
    version="0.1.0",
    description="Perceptual losses for real-time style transfer and super-resolution (Keras 3)",
    license="MIT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kperceptual", "kperceptual.*"]) + ["kperceptual.savedmodels"],
    # The shipped models install with the package, so names resolve from any folder
    # (models.shipped_models_dir).
    package_dir={"kperceptual.savedmodels": "savedmodels"},
    package_data={"kperceptual.savedmodels": ["*", "*/*/*", "*/*/*/*", "*/*/*/*/*"],
                  "kperceptual": ["app_static/*"]},  # the web demo's page (kperceptual.app)
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9.3",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "pillow>=10.0",
        "absl-py>=2.0",
        "scikit-image>=0.22",
        "scipy>=1.11",  # L-BFGS-B for the Gatys optimiser (callback with intermediate_result)
        "ai-edge-litert>=1.2",  # runs exported .tflite models (LiteRT)
        "imageio>=2.31",  # video frames in and out, with
        "imageio-ffmpeg>=0.5",  # its ffmpeg binary from PyPI
        "tensorflow-serving-api>=2.16",  # models.config's ModelServerConfig message
    ],
    extras_require={
        # The other Keras backends: training runs on them too (KERAS_BACKEND=jax or torch).
        "jax": ["jax>=0.4.30"],
        "torch": ["torch>=2.3"],
        # The tests train on all three backends on the CPU; Playwright drives the web demo in
        # Chromium (Debian's chromium package; the tests skip, saying so, without it).
        # Models from a hub: hf://OWNER/REPO and kaggle://OWNER/MODEL/keras/VARIANT handles.
        "hub": ["huggingface_hub>=0.20", "kagglehub>=0.3"],
        # export --format=onnx (tf2onnx, as Keras's own ONNX export on TensorFlow) and running it.
        "onnx": ONNX,
        "test": ["pytest>=8.0", "pytest-xdist>=3.8", "jax>=0.4.30", "torch>=2.3",
                 "playwright>=1.40", *ONNX],
    },
)
