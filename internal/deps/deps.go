package main
import (
 _ "github.com/eclipse/paho.mqtt.golang"
 _ "github.com/gorilla/websocket"
 _ "golang.org/x/crypto/hkdf"
 _ "golang.org/x/sys/unix"
 _ "github.com/spf13/afero"
 _ "github.com/creack/pty"
 _ "github.com/spf13/cobra"
 _ "github.com/mochi-mqtt/server/v2"
 _ "gopkg.in/yaml.v3"
)
func main(){}
