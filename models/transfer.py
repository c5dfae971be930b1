"""Transfer baselines on ImageNet-trained backbones, Convengers, and the layers that join trained models.

Backbones come from ``keras.applications``: ResNet-101 (He et al. 2016, "Deep Residual Learning for
Image Recognition"), Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for
Computer Vision") and VGG19 (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"). Each model takes 64x64 images in [0, 1] like the rest of the zoo and
does the rest inside the graph:

    input_normalization   what the backbone expects: ResNet/VGG "caffe" (0..255, ImageNet mean
                          subtracted; followed by ``input_bgr``, RGB -> BGR), Inception [-1, 1]
    augment_blur          Gaussian blur with probability 0.25 (training only), at the input resolution
    augment_resize        bilinear resize to backbone_size * 256/224
    augment_crop          a random backbone_size crop per image in training, the centre crop at
                          inference (torchvision's Resize(256) + CenterCrop(224) convention)
    <backbone>            nested keras.applications model ("resnet101", "inception_v3", "vgg19")
    logits                Dense on the backbone's global average pool

The resize-then-crop and the blur are the Convengers report's recipe (resize to 256, random 224 crop,
blur with p = 0.25; it gives no sigma: keras.layers.RandomGaussianBlur draws sigma from [0.1, 1] pixels,
its upper bound). The augmentation sits after the normalisation so that ``input_normalization`` stays
the first layer like everywhere in the zoo; resizing, cropping and blurring are convex combinations of
pixels, so they commute with the per-channel affine normalisation.

``weights="imagenet"`` (the default) downloads the backbone's weights into Keras' cache
(``~/.keras/models``); ``weights="none"`` starts from random weights and works offline.

``convengers`` joins the three backbones (the Convengers report's model): ResNet-101 average-pool
features (2048) + Inception v3 average-pool features (2048) + VGG19's first fully connected layer (4096)
-> 8192 features -> three blocks of Dense + BatchNorm + ReLU + Dropout -> logits. VGG19's ``fc1`` exists
only for 224x224 inputs (its input is the 7x7x512 flatten): at backbone_size 224 the pretrained ``fc1``
is used, at any other size a new ``vgg19_fc1`` Dense(4096) on the flattened features (never pretrained)
takes its place. The backbones are nested models named "resnet101", "inception_v3" and "vgg19" and the
head's layers start with "head_", so training.phases can train them one at a time.

The injectable options of models.options reach only the layers this module builds: ``conv_constraint``
is set on the logits Dense (and, in Convengers, on the head's Dense layers and a new ``vgg19_fc1``);
``norm_layer`` builds Convengers' head norm layers. The backbones' own BatchNormalization layers are
keras.applications' and are not replaced (the single-backbone heads have no norm layer, so ``norm_layer``
changes nothing there and ``models.routes.has_routes`` stays False); ``residual_merge`` is accepted for
one interface across the zoo and changes nothing (the backbones' residual adds are keras.applications').
"""
from __future__ import annotations

import math
import numbers
import os

import keras

from models.layers import check_common_arguments, check_rate
from models.options import batch_norm, injected
from models.registry import register_model

WEIGHTS = ("imagenet", "none")
# keras.applications' "caffe" preprocessing subtracts these from 0..255 pixels (listed here in RGB order).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
RESIZE_BEFORE_CROP = 256 / 224
BLUR_PROBABILITY = 0.25
BLUR_SIGMA = (0.1, 1.0)
BLUR_KERNEL_SIZE = 5

# name -> (keras.applications constructor name, preprocessing, default size, smallest size keras accepts)
BACKBONES = {
    "resnet101": ("ResNet101", "caffe", 224, 32),
    "inception_v3": ("InceptionV3", "inception", 299, 75),
    "vgg19": ("VGG19", "caffe", 224, 32),
}
CONVENGERS_HEAD_UNITS = (1024, 512, 256)


# ----------------------------------------------------------------------------- custom layers
@keras.saving.register_keras_serializable(package="zoo")
class ChannelReverse(keras.layers.Layer):
    """RGB -> BGR: the caffe-trained backbones (ResNet, VGG) read channels in BGR order."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class RandomCropTraining(keras.layers.Layer):
    """A random ``height`` x ``width`` crop per image in training, the centre crop at inference.

    keras.layers.RandomCrop (Keras 3.15) draws one window for the whole batch and returns its input
    uncropped at inference, so its output size would change between training and evaluation.
    """

    def __init__(self, height, width, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.seed = int(height), int(width), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        input_height, input_width = inputs.shape[1], inputs.shape[2]
        if not training:
            top, left = (input_height - self.height) // 2, (input_width - self.width) // 2
            return inputs[:, top:top + self.height, left:left + self.width, :]
        batch = keras.ops.shape(inputs)[0]
        top = keras.random.randint((batch, 1), 0, input_height - self.height + 1, seed=self.seed_generator)
        left = keras.random.randint((batch, 1), 0, input_width - self.width + 1, seed=self.seed_generator)
        rows = top + keras.ops.arange(self.height, dtype="int32")[None, :]
        columns = left + keras.ops.arange(self.width, dtype="int32")[None, :]
        x = keras.ops.take_along_axis(inputs, rows[:, :, None, None], axis=1)
        return keras.ops.take_along_axis(x, columns[:, None, :, None], axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "seed": self.seed}


@keras.saving.register_keras_serializable(package="zoo")
class GaussianBlurTraining(keras.layers.RandomGaussianBlur):
    """keras.layers.RandomGaussianBlur that stays off unless ``training=True`` is passed or inherited
    (the built-in one defaults to on, so ``model(images)`` would blur at inference)."""

    def call(self, data, training=False):
        return super().call(data, training=training)


@keras.saving.register_keras_serializable(package="zoo")
class InferenceOnly(keras.layers.Wrapper):
    """Runs the wrapped (trained, frozen) model with ``training=False`` whatever the caller's mode.

    A functional model passes its own ``training`` flag down to every nested model, which would turn
    a frozen member's dropout on while a stack trains on top of it; this wrapper's ``call`` takes no
    ``training`` argument, so the flag stops here and BatchNorm and Dropout stay in inference mode.
    """

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(layer, **kwargs)
        self.layer.trainable = self.trainable

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="zoo")
# Kept so that averaged ensembles saved before they were built from Keras' own layers still load.
class MeanProbabilityLogits(keras.layers.Layer):
    """log of the mean of the members' softmax probabilities (the averaged ensemble of Convengers).

    Its output behaves as logits: softmax of it gives the mean probabilities exactly, because they
    already sum to one. Computed as logsumexp of the log-softmaxes minus log(count), in float32.
    """

    def call(self, inputs):
        logits = keras.ops.stack([keras.ops.cast(member, "float32") for member in inputs], axis=0)
        log_probabilities = keras.ops.log_softmax(logits, axis=-1)
        return keras.ops.logsumexp(log_probabilities, axis=0) - math.log(len(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


# ----------------------------------------------------------------------------- backbones
def keras_cache_models_dir() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def _check_transfer_arguments(num_classes, input_shape, normalization, weights, backbone_size, smallest):
    input_shape = check_common_arguments(num_classes, input_shape, normalization)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}. Received: weights={weights!r}")
    if isinstance(backbone_size, bool) or not isinstance(backbone_size, numbers.Integral) or backbone_size < smallest:
        raise ValueError(f"backbone_size must be an integer >= {smallest}. Received: backbone_size={backbone_size!r}")
    if weights == "imagenet" and input_shape[2] != 3:
        raise ValueError(f"ImageNet weights need 3-channel inputs. Received: input_shape={input_shape!r}")
    return input_shape, int(backbone_size)


def application(backbone: str, weights: str, **kwargs) -> keras.Model:
    """The keras.applications ``backbone``; offline, one clear error instead of a download traceback."""
    constructor = getattr(keras.applications, BACKBONES[backbone][0])
    try:
        return constructor(weights=None if weights == "none" else "imagenet", **kwargs)
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the download fails
        if weights == "none" or not (type(error) is Exception or isinstance(error, OSError)):
            raise
        reason = " ".join(str(error).split())
        raise ValueError(
            f"Cannot download the ImageNet weights of {backbone} ({reason}). Pass --weights none "
            f"(weights='none') to start from random weights, or put the weight file in Keras' cache "
            f"{keras_cache_models_dir()} (~/.keras/models, or $KERAS_HOME/models)."
        ) from None


def _input_pipeline(input_shape, backbone_size, preprocessing, normalization, augmentation, seed):
    """Input -> normalisation -> (blur, resize, random crop). Returns (inputs, tensor, value range)."""
    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    if normalization == "none":
        x, value_range = keras.layers.Identity(name="input_normalization")(inputs), (0.0, 1.0)
    elif preprocessing == "caffe":
        x = keras.layers.Normalization(mean=[m / 255 for m in CAFFE_MEAN_RGB], variance=[(1 / 255) ** 2] * 3,
                                       name="input_normalization")(inputs)
        x = ChannelReverse(name="input_bgr")(x)
        value_range = (-max(CAFFE_MEAN_RGB), 255 - min(CAFFE_MEAN_RGB))
    else:  # inception: [-1, 1]
        x = keras.layers.Normalization(mean=[0.5] * 3, variance=[0.25] * 3, name="input_normalization")(inputs)
        value_range = (-1.0, 1.0)
    resized = round(backbone_size * RESIZE_BEFORE_CROP) if augmentation else backbone_size
    if augmentation:
        x = GaussianBlurTraining(factor=(BLUR_PROBABILITY, BLUR_PROBABILITY), kernel_size=BLUR_KERNEL_SIZE,
                                            sigma=BLUR_SIGMA, value_range=value_range, seed=seed,
                                            name="augment_blur")(x)
    x = keras.layers.Resizing(resized, resized, interpolation="bilinear", name="augment_resize")(x)
    if augmentation:
        x = RandomCropTraining(backbone_size, backbone_size, seed=seed, name="augment_crop")(x)
    return inputs, x


def _transfer(name, backbone_name, num_classes, input_shape, normalization, weights, backbone_size,
              augmentation, dropout, seed, norm_layer, conv_constraint, residual_merge):
    _, preprocessing, default_size, smallest = BACKBONES[backbone_name]
    backbone_size = default_size if backbone_size is None else backbone_size
    input_shape, backbone_size = _check_transfer_arguments(num_classes, input_shape, normalization, weights,
                                                           backbone_size, smallest)
    dropout = check_rate("dropout", dropout)
    constraint = injected(norm_layer, conv_constraint, residual_merge)["conv_constraint"]
    inputs, x = _input_pipeline(input_shape, backbone_size, preprocessing, normalization, augmentation, seed)
    backbone = application(backbone_name, weights, include_top=False, pooling="avg",
                           input_shape=(backbone_size, backbone_size, input_shape[2]), name=backbone_name)
    # Named so the smoothness term finds the backbone's features (with the logits: a nested model's own
    # block outputs are not reachable from the outer graph).
    x = keras.layers.Identity(name="backbone_out")(backbone(x))
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_constraint=constraint, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model
def resnet101_transfer(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", weights="imagenet",
                       backbone_size=None, augmentation=True, dropout=0.0, seed=None, norm_layer=batch_norm,
                       conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-101 fine-tuned from ImageNet at backbone_size (224 by default)."""
    return _transfer("resnet101_transfer", "resnet101", num_classes, input_shape, normalization, weights,
                     backbone_size, augmentation, dropout, seed, norm_layer, conv_constraint,
                     residual_merge)


@register_model
def inception_v3_transfer(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                          weights="imagenet", backbone_size=None, augmentation=True, dropout=0.0,
                          seed=None, norm_layer=batch_norm, conv_constraint=None,
                          residual_merge="add") -> keras.Model:
    """Inception v3 (no auxiliary head) fine-tuned from ImageNet at backbone_size (299 by default, 75 at least)."""
    return _transfer("inception_v3_transfer", "inception_v3", num_classes, input_shape, normalization, weights,
                     backbone_size, augmentation, dropout, seed, norm_layer, conv_constraint,
                     residual_merge)


@register_model
def vgg19_transfer(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", weights="imagenet",
                   backbone_size=None, augmentation=True, dropout=0.0, seed=None, norm_layer=batch_norm,
                       conv_constraint=None, residual_merge="add") -> keras.Model:
    """VGG19's convolutions fine-tuned from ImageNet at backbone_size (224 by default), average-pooled."""
    return _transfer("vgg19_transfer", "vgg19", num_classes, input_shape, normalization, weights,
                     backbone_size, augmentation, dropout, seed, norm_layer, conv_constraint,
                     residual_merge)


def _vgg19_fc1(weights, backbone_size, channels, constraint) -> keras.Model:
    """VGG19 up to its first fully connected layer (4096 features), as one model named "vgg19"."""
    if backbone_size == 224:
        full = application("vgg19", weights, include_top=True, input_shape=(224, 224, channels))
        return keras.Model(full.input, full.get_layer("fc1").output, name="vgg19")
    convolutions = application("vgg19", weights, include_top=False,
                               input_shape=(backbone_size, backbone_size, channels))
    x = keras.layers.Flatten(name="vgg19_flatten")(convolutions.output)
    x = keras.layers.Dense(4096, activation="relu", kernel_constraint=constraint, name="vgg19_fc1")(x)
    return keras.Model(convolutions.input, x, name="vgg19")


@register_model
def convengers(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", weights="imagenet",
               backbone_size=224, augmentation=True, head_units=CONVENGERS_HEAD_UNITS, dropout=0.5,
               seed=None, norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-101 + Inception v3 + VGG19 features (8192) under a three-block dense head (Convengers report)."""
    input_shape, backbone_size = _check_transfer_arguments(num_classes, input_shape, normalization, weights,
                                                           backbone_size, BACKBONES["inception_v3"][3])
    dropout = check_rate("dropout", dropout)
    head_units = tuple(head_units)
    if not head_units or any(isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1 for u in head_units):
        raise ValueError(f"head_units must be positive integers. Received: head_units={head_units!r}")
    options = injected(norm_layer, conv_constraint, residual_merge)
    constraint = options["conv_constraint"]

    # One shared view for all three backbones: normalised to Inception's [-1, 1] first, then converted to
    # the caffe scale (127.5 * (y + 1) - mean, BGR) for ResNet and VGG.
    inputs, x = _input_pipeline(input_shape, backbone_size, "inception", normalization, augmentation, seed)
    caffe = x
    if normalization != "none":
        caffe = keras.layers.Normalization(mean=[(m - 127.5) / 127.5 for m in CAFFE_MEAN_RGB],
                                           variance=[(1 / 127.5) ** 2] * 3, name="caffe_normalization")(x)
        caffe = ChannelReverse(name="caffe_bgr")(caffe)
    shape = (backbone_size, backbone_size, input_shape[2])
    resnet = application("resnet101", weights, include_top=False, pooling="avg", input_shape=shape, name="resnet101")
    inception = application("inception_v3", weights, include_top=False, pooling="avg", input_shape=shape,
                            name="inception_v3")
    vgg = _vgg19_fc1(weights, backbone_size, input_shape[2], constraint)
    features = keras.layers.Concatenate(name="head_concatenate")([resnet(caffe), inception(x), vgg(caffe)])
    x = features
    for index, units in enumerate(head_units, start=1):
        x = keras.layers.Dense(int(units), use_bias=False, kernel_constraint=constraint, name=f"head_dense{index}")(x)
        x = options["norm_layer"](name=f"head_bn{index}")(x)
        x = keras.layers.ReLU(name=f"head_block{index}_out")(x)
        x = keras.layers.Dropout(dropout, name=f"head_dropout{index}")(x)
    outputs = keras.layers.Dense(num_classes, kernel_constraint=constraint, name="head_logits")(x)
    return keras.Model(inputs, outputs, name="convengers")
