"""The model definitions of the user's guide (shared/spec/migrating-from-pytorch.md), verbatim."""

from mithril.models import (
    Add,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Model,
    Relu,
)


def create_conv_net():
    model = Model()
    model |= Conv2d(in_channels=3, out_channels=16, kernel_size=3, padding=1)
    model += BatchNorm2d(num_features=16)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Conv2d(in_channels=16, out_channels=32, kernel_size=3, padding=1)
    model += BatchNorm2d(num_features=32)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Flatten()
    model += Linear(dimension=10)(input_size=32*8*8)
    return model


def create_sequential():
    model = Model()
    model |= Conv2d(in_channels=3, out_channels=16, kernel_size=3)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Conv2d(in_channels=16, out_channels=32, kernel_size=3)
    model += Relu()
    model += MaxPool2d(kernel_size=2)
    model += Flatten()
    model += Linear(dimension=10)(input_size=32*6*6)
    return model


def create_residual_block(in_channels, out_channels):
    block = Model()

    # Main path
    block |= Conv2d(in_channels=in_channels, out_channels=out_channels,
                   kernel_size=3, padding=1)(input="input", output="conv1")
    block += BatchNorm2d(num_features=out_channels)(input="conv1", output="bn1")
    block += Relu()(input="bn1", output="relu1")
    block += Conv2d(in_channels=out_channels, out_channels=out_channels,
                   kernel_size=3, padding=1)(input="relu1", output="conv2")
    block += BatchNorm2d(num_features=out_channels)(input="conv2", output="bn2")

    # Skip connection
    if in_channels != out_channels:
        block += Conv2d(in_channels=in_channels, out_channels=out_channels,
                       kernel_size=1)(input="input", output="identity")
    else:
        # Direct connection
        identity_input = "input"

    # Add the residual connection
    block += Add()(left="bn2", right=identity_input if in_channels == out_channels else "identity", output="add")  # noqa: E501
    block += Relu()(input="add", output="output")

    return block


def create_double_conv(in_channels, out_channels):
    double_conv = Model()
    double_conv |= Conv2d(in_channels=in_channels, out_channels=out_channels,
                         kernel_size=3, padding=1)
    double_conv += BatchNorm2d(num_features=out_channels)
    double_conv += Relu()
    double_conv += Conv2d(in_channels=out_channels, out_channels=out_channels,
                         kernel_size=3, padding=1)
    double_conv += BatchNorm2d(num_features=out_channels)
    double_conv += Relu()
    return double_conv


def create_unet():
    unet = Model()
    unet |= create_double_conv(3, 64)(output="down1")
    unet += create_double_conv(64, 128)(input="down1", output="down2")
    # More layers...
    return unet
